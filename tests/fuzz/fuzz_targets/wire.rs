//! Every wire message either side decodes from the network (the CBOR envelope and each
//! body): never a panic, and what is accepted survives a round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    wedge_proto::wire_check::check(input);
});
