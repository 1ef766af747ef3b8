//! Compiles every `bpf/*.c` into a BPF object with clang and embeds them: `xvs::bpf::object("name")`.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=bpf");
    let mut names = Vec::new();
    let mut sources: Vec<PathBuf> = fs::read_dir("bpf")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    sources.sort();
    for src in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "c")) {
        println!("cargo:rerun-if-changed={}", src.display());
        let name = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("bpf source names are UTF-8")
            .to_string();
        let obj = out.join(format!("{name}.o"));
        let status = Command::new(env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args([
                "-O2",
                "-g",
                "-Wall",
                "-target",
                "bpf",
                "-I/usr/include/x86_64-linux-gnu",
                "-Ibpf",
                "-c",
            ])
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => names.push(name),
            Ok(s) => panic!("clang failed ({s}) compiling {}", src.display()),
            Err(e) => panic!("cannot run clang to compile {} ({e}): run scripts/setup", src.display()),
        }
    }
    let mut table = String::from(
        "/// BPF objects compiled from `bpf/*.c` by build.rs: (name, ELF bytes).\npub static OBJECTS: &[(&str, &[u8])] = &[\n",
    );
    for n in &names {
        table.push_str(&format!(
            "    ({n:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{n}.o\"))),\n"
        ));
    }
    table.push_str("];\n");
    fs::write(out.join("bpf_objects.rs"), table).expect("write bpf_objects.rs");
}
