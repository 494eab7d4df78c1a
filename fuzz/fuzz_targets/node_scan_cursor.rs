#![no_main]

// The node is a binary with the S3 client behind it; its cursor module stands alone.
#[path = "../../node/src/api/cursor.rs"]
mod cursor;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cursor::fuzz_cursor(data);
});
