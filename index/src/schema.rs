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

/// Name of the person id field (also the tie-break sort column).
pub(crate) const PERSON_ID: &str = "person_id";
/// Name of the version field.
pub(crate) const VERSION: &str = "version";

/// Handles of all fields of the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub(crate) person_id: Field,
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
        // Indexed for delete-by-id; a raw fast column for tie-breaking and retrieval.
        person_id: b.add_text_field(PERSON_ID, term_field().set_fast("raw")),
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

impl Fields {
    /// The tantivy document for one person version.
    pub(crate) fn document(&self, person: &PersonDoc) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.person_id, &person.person_id);
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
}
