#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lsm::fuzzing::lsm_replica_edit(data);
});
