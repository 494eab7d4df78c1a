#![no_main]

// The node is a binary with the S3 client behind it; its decoding module stands alone.
#[path = "../../node/src/transport/wire.rs"]
mod wire;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wire::fuzzing::node_rpc(data);
});
