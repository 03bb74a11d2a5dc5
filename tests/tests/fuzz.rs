//! Fuzzing with proptest on arbitrary bytes (cargo-fuzz needs a nightly toolchain, which this
//! project does not require): whatever arrives from outside, parsing and decoding answer an
//! error and never panic. Each target runs `PROPTEST_CASES` cases (1,000 by default here);
//! run longer with, for example, `PROPTEST_CASES=1000000 cargo test -p ims-tests --test fuzz`.

use ims_log::{decode_record, Envelope, LogBatch};
use ims_projection::queries::QueryParams;
use ims_wire::{parse_command, OPERATOR_COMMANDS, TENANT_COMMANDS};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    ProptestConfig::with_cases(cases)
}

/// Bytes that are sometimes JSON-shaped, so the parsers get past their first check too.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "\\{(\"[a-z_]{1,12}\": ?(\"[^\"]{0,40}\"|[0-9]{1,25}|-1|true|null|\\[\\]|\\{\\}), ?){0,6}\\}"
            .prop_map(String::into_bytes),
    ]
}

/// A valid envelope's bytes with some of them changed: decoders see nearly-right input.
fn mangled_envelope() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        0usize..400,
    )
        .prop_map(|(changes, cut)| {
            let body = ims_log::EnvelopeBody {
                position: 7,
                event_id: [1; 16],
                stream: "image/0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f".into(),
                stream_version: 2,
                command_id: Some([2; 16]),
                actor: "tenant acme".into(),
                region: "eu-west-0".into(),
                recorded_at_ms: 1,
                event_type: "image_deleted".into(),
                schema_version: 1,
                payload: vec![0; 40],
            };
            let mut bytes = Envelope::seal(body, [0; 32]).encode();
            for (at, byte) in changes {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            bytes.truncate(bytes.len().saturating_sub(cut % 64));
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn command_parsing_never_panics(index in 0usize..64, payload in json_ish()) {
        let names: Vec<&str> = TENANT_COMMANDS.iter().chain(OPERATOR_COMMANDS.iter()).copied().collect();
        let name = names.get(index).copied().unwrap_or("no-such-command");
        let _ = parse_command(name, &payload);
    }

    #[test]
    fn query_parsing_never_panics(payload in json_ish()) {
        let _ = serde_json::from_slice::<QueryParams>(&payload);
    }

    #[test]
    fn envelope_and_record_decoding_never_panic(bytes in prop_oneof![mangled_envelope(), proptest::collection::vec(any::<u8>(), 0..512)], position in any::<u64>()) {
        let _ = Envelope::decode(&bytes);
        let _ = decode_record(&bytes, position);
        if let Ok(envelope) = Envelope::decode(&bytes) {
            let _ = ims_log::decode_event(&envelope);
            let _ = envelope.hash_is_valid();
        }
    }

    #[test]
    fn log_read_reply_decoding_never_panics(bytes in prop_oneof![mangled_envelope(), proptest::collection::vec(any::<u8>(), 0..512)]) {
        let _ = ims_log::decode::<LogBatch>(&bytes, || "log.read reply".into());
    }

    #[test]
    fn credential_and_callout_parsing_never_panic(text in ".{0,120}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = ims_identity::Token::parse(&text);
        let _ = ims_identity::callout::decode_request(&bytes);
        let _ = ims_identity::callout::decode_request(text.as_bytes());
    }
}
