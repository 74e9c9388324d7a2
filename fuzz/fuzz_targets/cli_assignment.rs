//! `KEY=VALUE` from the command line (and the console over SSH), applied to the seed settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi_core::settings;

const SEED: &str = include_str!("../../crates/vdi-core/src/settings/seed.json");

fuzz_target!(|text: &str| {
    let base = settings::parse_document_text(SEED).expect("the seed parses");
    let mut patch = serde_json::Map::new();
    for arg in text.split('\n') {
        match settings::parse_assignment(arg) {
            Ok((k, v)) => {
                patch.insert(k, v);
            }
            Err(_) => return,
        }
    }
    if let Ok(change) = settings::apply_patch(&base, &patch) {
        // An accepted change is a valid document.
        let doc = settings::render_document(&change.settings);
        assert!(settings::parse_document_text(&doc).is_ok());
    }
});
