//! The settings document as the database, the API and the CLI hand it over.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi_core::settings;

fuzz_target!(|text: &str| {
    if let Ok(s) = settings::parse_document_text(text) {
        // What parses renders to a document that parses to the same settings.
        let again = settings::parse_document_text(&settings::render_document(&s))
            .expect("a rendered document parses");
        assert_eq!(again, s);
    }
});
