//! Fuzz target `consumer_protocol`: see `mes_kafka_fuzz::consumer_protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mes_kafka_fuzz::consumer_protocol(data));
