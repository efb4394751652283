//! The tantivy schema of the candidate index and the mapping of a [`PersonDoc`] onto a tantivy
//! document.
//!
//! Owns: field names and options, and which analysis output goes into which field. Every search
//! field is an untokenized ("raw") term field: the terms are produced by [`crate::analysis`],
//! so the index never depends on a tokenizer being registered at open time.
//!
//! Must not: store personal values (nothing but `person_id` and `version` is retrievable from
//! the index), decide scoring (that is [`crate::query`]), or do I/O. Changing anything here
//! requires bumping [`crate::FORMAT_VERSION`].

use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::TantivyDocument;

use crate::analysis::{exact_terms, AddressTerms, NameTerms};
use crate::PersonDoc;

/// Name of the person id field (retrieval of the hits).
pub(crate) const PERSON_ID: &str = "person_id";
/// Name of the tie-break sort column: `person_key` of the person id.
pub(crate) const PERSON_KEY: &str = "person_key";
/// Name of the version field.
pub(crate) const VERSION: &str = "version";

/// Handles of all fields of the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub(crate) person_id: Field,
    pub(crate) person_key: Field,
    pub(crate) version: Field,
    pub(crate) name_exact: Field,
    pub(crate) name_unigram: Field,
    pub(crate) name_bigram: Field,
    pub(crate) name_pinyin: Field,
    pub(crate) name_pinyin_bigram: Field,
    pub(crate) id_number: Field,
    pub(crate) birth_date: Field,
    pub(crate) phone: Field,
    pub(crate) address_exact: Field,
    pub(crate) address_bigram: Field,
}

/// Options of a search-only term field: raw terms, no positions, no frequencies, no norms
/// (scoring is constant per matched term, see [`crate::query`]).
fn term_field() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

/// Builds the schema. Deterministic: the same build always yields an equal schema, which is how
/// `open` detects a schema that does not match the recorded format version.
pub(crate) fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        // Indexed for delete-by-id; a raw fast column for retrieving the hits.
        person_id: b.add_text_field(PERSON_ID, term_field().set_fast("raw")),
        // Ties sort on a number: sorting on the string column looks every segment's top hits
        // up in the term dictionary, which cost most of a search.
        person_key: b.add_u64_field(PERSON_KEY, FAST),
        version: b.add_u64_field(VERSION, FAST),
        name_exact: b.add_text_field("name_exact", term_field()),
        name_unigram: b.add_text_field("name_unigram", term_field()),
        name_bigram: b.add_text_field("name_bigram", term_field()),
        name_pinyin: b.add_text_field("name_pinyin", term_field()),
        name_pinyin_bigram: b.add_text_field("name_pinyin_bigram", term_field()),
        id_number: b.add_text_field("id_number", term_field()),
        birth_date: b.add_text_field("birth_date", term_field()),
        phone: b.add_text_field("phone", term_field()),
        address_exact: b.add_text_field("address_exact", term_field()),
        address_bigram: b.add_text_field("address_bigram", term_field()),
    };
    (b.build(), fields)
}

/// The tie-break order of a person id as a number. The service's ids (`P` and 16 upper-case
/// hex digits) map to their value, so the order is the ids' own order; any other id maps to
/// its first 8 bytes, big-endian, which keeps the order of ids differing in those bytes.
pub(crate) fn person_key(person_id: &str) -> u64 {
    let hex = person_id
        .strip_prefix('P')
        .filter(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
    if let Some(value) = hex.and_then(|hex| u64::from_str_radix(hex, 16).ok()) {
        return value;
    }
    let mut bytes = [0u8; 8];
    for (slot, byte) in bytes.iter_mut().zip(person_id.bytes()) {
        *slot = byte;
    }
    u64::from_be_bytes(bytes)
}

impl Fields {
    /// The tantivy document for one person version.
    pub(crate) fn document(&self, person: &PersonDoc) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.person_id, &person.person_id);
        doc.add_u64(self.person_key, person_key(&person.person_id));
        doc.add_u64(self.version, person.version);

        let mut names = NameTerms::default();
        for name in &person.names {
            names.add_name(name);
        }
        add_all(&mut doc, self.name_exact, &names.exact);
        add_all(&mut doc, self.name_unigram, &names.unigrams);
        add_all(&mut doc, self.name_bigram, &names.bigrams);
        add_all(&mut doc, self.name_pinyin, &names.pinyin_full);
        add_all(&mut doc, self.name_pinyin_bigram, &names.pinyin_bigrams);

        add_all(&mut doc, self.id_number, &exact_terms(&person.id_numbers));
        add_all(&mut doc, self.birth_date, &exact_terms(&person.birth_dates));
        add_all(&mut doc, self.phone, &exact_terms(&person.phones));

        let mut addresses = AddressTerms::default();
        for address in &person.addresses {
            addresses.add_address(address);
        }
        add_all(&mut doc, self.address_exact, &addresses.exact);
        add_all(&mut doc, self.address_bigram, &addresses.bigrams);
        doc
    }
}

fn add_all<'a>(doc: &mut TantivyDocument, field: Field, terms: impl IntoIterator<Item = &'a String>) {
    for term in terms {
        doc.add_text(field, term);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_deterministic() {
        assert_eq!(build().0, build().0);
    }

    #[test]
    fn person_keys_keep_the_order_of_ids() {
        let ids = [
            "P0000000000000001",
            "P00000000000000FF",
            "P8000000000000000",
            "PFFFFFFFFFFFFFFFF",
        ];
        let keys: Vec<u64> = ids.iter().map(|id| person_key(id)).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
        assert!(person_key("p-01") < person_key("p-02"));
        assert!(person_key("p-2") > person_key("p-10"));
    }
}
