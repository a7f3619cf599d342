//! The frame decoder, fed arbitrary bytes a piece at a time.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_core::fuzzing::decode_stream(data));
