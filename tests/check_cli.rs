//! `xvs check` as a user runs it: exit codes and output.

use std::process::Command;

fn xvs(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn good_file_prints_the_model() {
    let (code, out, _) = xvs(&["check", "-c", concat!(env!("CARGO_MANIFEST_DIR"), "/config/xvs.toml")]);
    assert_eq!(code, 0);
    assert!(out.contains("TCP 198.18.0.10:80 wrr"), "{out}");
    assert!(out.contains("-> 198.18.2.11:80"), "{out}");
}

#[test]
fn embedded_default_without_a_file() {
    let (code, out, _) = xvs(&["check"]);
    assert_eq!(code, 0);
    assert!(out.contains("embedded default"), "{out}");
}

#[test]
fn bad_file_lists_every_error_with_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("xvs-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[global]\nworkers = 0\n\n[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nlb_kind = \"MAGIC\"\n",
    )
    .unwrap();
    let (code, _, err) = xvs(&["check", "-c", f.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1);
    let name = f.display().to_string();
    assert!(
        err.contains(&format!("{name}:2: global.workers: 0 is out of range")),
        "{err}"
    );
    assert!(err.contains(&format!("{name}:7: virtual_server[0].lb_kind:")), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn unreadable_file_exits_2() {
    let (code, _, err) = xvs(&["check", "-c", "/nonexistent/xvs.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
}
