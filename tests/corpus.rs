//! Replays the committed fuzz corpus through the data plane with the fuzz target's invariants,
//! so that CI covers it without a fuzzer.

use xvs::replay::{Offline, exercise};

#[test]
fn fuzz_corpus_replays_cleanly() {
    let cfg = xvs::config::parse(include_str!("data/golden.toml"), "golden.toml").unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/pipeline");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let mut d = Offline::new(&cfg, &[]).unwrap();
        exercise(&mut d, &data);
        n += 1;
    }
    assert!(n >= 10, "the corpus holds only {n} inputs");
}
