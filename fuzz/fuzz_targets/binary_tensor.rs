//! Fuzz target: see `switchyard_fuzz::targets::binary_tensor`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::targets::binary_tensor(data));
