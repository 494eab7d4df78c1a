#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = raftlog::fuzzing::raft_meta(data);
});
