//! Fuzz target `record_batches`: see `mes_kafka_fuzz::record_batches`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mes_kafka_fuzz::record_batches(data));
