//! Fuzz target `answers`: see `mes_kafka_fuzz::answers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mes_kafka_fuzz::answers(data));
