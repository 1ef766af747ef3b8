//! The end-to-end harness shared by the root-only lab tests: a lab with `xvs run` in its
//! director, both removed on drop (also when a test fails).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use xvs::lab::{self, Lab, LabOpts};

pub const XVS: &str = env!("CARGO_BIN_EXE_xvs");

pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("skipped: not root");
    }
    ok
}

pub fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "xe{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A lab with `xvs run` in its director; both go away on drop.
pub struct Director {
    pub lab: Lab,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Director {
    /// The default configuration with `[global]` replaced by `global`.
    pub fn start(global: &str, queues: u16) -> Director {
        let text = xvs::config::DEFAULT.replace(
            "[global]\nworkers = 1            # worker threads; or cores = [1, 2] to pin them\nio = \"auto\"            # auto (AF_XDP, else AF_PACKET) | af_xdp | af_packet\nxdp_mode = \"auto\"      # auto | native | generic\n",
            &format!("[global]\n{global}\n"),
        );
        assert_ne!(
            text,
            xvs::config::DEFAULT,
            "the default's [global] changed: update this test"
        );
        Director::with_config(&text, queues)
    }

    /// A lab with `xvs run -c` on a file holding `text`.
    pub fn with_config(text: &str, queues: u16) -> Director {
        let p = prefix();
        let lab = Lab::up(
            &LabOpts {
                prefix: p.clone(),
                queues,
                serve_exe: Some(XVS.into()),
                ha: false,
            },
            &mut |_| {},
        )
        .expect("lab up");
        let dir = std::env::temp_dir();
        let config = dir.join(format!("{p}.toml"));
        let log = dir.join(format!("{p}.log"));
        std::fs::write(&config, text).unwrap();
        let mut d = Director {
            lab,
            child: None,
            log,
            config,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let out = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", self.lab.ns("lb").name(), XVS, "run", "-c"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while !self.log_text().contains("SIGTERM stop\n") {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "xvs did not start:\n{}",
                self.log_text()
            );
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("xvs exited ({st}):\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: sending a signal to our own child; `ip netns exec` execs xvs in place.
        unsafe { libc::kill(pid, sig) };
    }

    /// Stops xvs with SIGINT and returns its log.
    pub fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid, libc::SIGINT) };
            let t = Instant::now();
            while c.try_wait().unwrap().is_none() {
                assert!(t.elapsed() < Duration::from_secs(10), "xvs did not stop");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.log_text()
    }

    pub fn cli(&self) -> &lab::netns::Netns {
        self.lab.ns("cli")
    }

    /// Whether any XDP program or tc filter of xvs is left on the director's interfaces.
    pub fn xdp_left(&self) -> bool {
        let out = self.lab.ns("lb").exec(&["ip", "link", "show"]).unwrap();
        let tc = |dev: &str| {
            self.lab
                .ns("lb")
                .exec(&["tc", "filter", "show", "dev", dev, "ingress"])
                .map(|o| o.stdout)
                .unwrap_or_default()
        };
        String::from_utf8_lossy(&out.stdout).contains("xdp") || !tc("lb0").is_empty() || !tc("lb1").is_empty()
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}
