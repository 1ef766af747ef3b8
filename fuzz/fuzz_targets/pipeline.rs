//! The whole data plane over arbitrary frames: `cargo fuzz run pipeline` (see fuzz/README.md).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xvs::replay::{Offline, exercise};

static CONFIG: OnceLock<xvs::config::Config> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let cfg = CONFIG.get_or_init(|| {
        xvs::config::parse(include_str!("../../tests/data/golden.toml"), "golden.toml").expect("golden config is valid")
    });
    // A fresh director per input keeps runs reproducible.
    let mut d = Offline::new(cfg, &[]).expect("golden config has ports");
    exercise(&mut d, data);
});
