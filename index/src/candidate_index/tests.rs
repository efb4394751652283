//! Tests of [`CandidateIndex`] against real on-disk indexes in temp directories. All persons are
//! synthetic: made-up names, ID numbers with an impossible region code, fake phones.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::*;
use crate::{PersonDoc, FORMAT_VERSION};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn person(id: &str, version: u64, names: &[&str]) -> PersonDoc {
    PersonDoc {
        person_id: id.to_owned(),
        version,
        names: names.iter().map(|s| s.to_string()).collect(),
        ..PersonDoc::default()
    }
}

fn with_ids(mut doc: PersonDoc, id_numbers: &[&str]) -> PersonDoc {
    doc.id_numbers = id_numbers.iter().map(|s| s.to_string()).collect();
    doc
}

fn full(
    id: &str,
    version: u64,
    name: &str,
    id_number: &str,
    birth_date: &str,
    phone: &str,
    address: &str,
) -> PersonDoc {
    PersonDoc {
        person_id: id.to_owned(),
        version,
        names: vec![name.to_owned()],
        id_numbers: vec![id_number.to_owned()],
        birth_dates: vec![birth_date.to_owned()],
        phones: vec![phone.to_owned()],
        addresses: vec![address.to_owned()],
    }
}

fn by_name(name: &str) -> CandidateQuery {
    CandidateQuery {
        name: Some(name.to_owned()),
        ..CandidateQuery::default()
    }
}

fn by_id(id_number: &str) -> CandidateQuery {
    CandidateQuery {
        id_number: Some(id_number.to_owned()),
        ..CandidateQuery::default()
    }
}

fn upserts(docs: impl IntoIterator<Item = PersonDoc>) -> Vec<IndexOp> {
    docs.into_iter().map(IndexOp::Upsert).collect()
}

fn ids(candidates: &[Candidate]) -> Vec<&str> {
    candidates.iter().map(|c| c.person_id.as_str()).collect()
}

fn open(dir: &Path) -> Result<CandidateIndex, IndexError> {
    CandidateIndex::open(dir, &IndexConfig::default())
}

/// A fresh index in a new temp dir, loaded with `docs` and committed at watermark 1.
fn loaded(docs: Vec<PersonDoc>) -> Result<(tempfile::TempDir, CandidateIndex), IndexError> {
    let tmp = tempfile::tempdir().map_err(IndexError::io("creating a temp dir"))?;
    let index = open(tmp.path())?;
    index.apply(upserts(docs))?;
    index.commit(1)?;
    Ok((tmp, index))
}

fn sample() -> Vec<PersonDoc> {
    vec![
        full(
            "p-001",
            1,
            "张伟明",
            "99000019900101001X",
            "1990-01-01",
            "13900000001",
            "示例省虚构市梧桐路8号",
        ),
        full(
            "p-002",
            1,
            "李娜",
            "990000199202020022",
            "1992-02-02",
            "13900000002",
            "示例省虚构市银杏街12号",
        ),
        full(
            "p-003",
            1,
            "章玮",
            "990000198503030033",
            "1985-03-03",
            "13900000003",
            "示例省假想县柳树村3组",
        ),
        person("p-004", 1, &["欧阳晓燕", "欧阳小燕"]),
        person("p-005", 1, &["Anna Lindqvist"]),
        person("p-006", 1, &["刘洋"]),
    ]
}

#[test]
fn candidate_index_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CandidateIndex>();
}

#[test]
fn new_index_is_empty_at_watermark_zero() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for dir in [tmp.path().to_path_buf(), tmp.path().join("not/yet/there")] {
        let index = open(&dir)?;
        assert_eq!(index.watermark(), 0);
        assert_eq!(index.num_persons(), 0);
        assert!(index.candidates(&by_name("李娜"), 10)?.is_empty());
    }
    Ok(())
}

#[test]
fn finds_by_name_ngram_exact_id_and_pinyin() -> TestResult {
    let (_tmp, index) = loaded(sample())?;
    assert_eq!(index.num_persons(), 6);
    // (query, expected best candidate)
    let cases: Vec<(CandidateQuery, &str)> = vec![
        (by_name("张伟明"), "p-001"),
        // n-grams: part of the name, and a one-character typo.
        (by_name("伟明"), "p-001"),
        (by_name("张伟民"), "p-001"),
        (by_name("欧阳晓"), "p-004"),
        // second name of the same person
        (by_name("欧阳小燕"), "p-004"),
        // Latin name: letter n-grams, case and spacing ignored
        (by_name("anna lindquist"), "p-005"),
        // exact terms
        (by_id("990000199202020022"), "p-002"),
        (by_id("99000019900101001x"), "p-001"),
        (
            CandidateQuery {
                phone: Some("13900000003".into()),
                ..CandidateQuery::default()
            },
            "p-003",
        ),
        (
            CandidateQuery {
                address: Some("虚构市银杏街".into()),
                ..CandidateQuery::default()
            },
            "p-002",
        ),
        // pinyin homophones sharing no character: 张伟 ~ 章玮 (zhang wei), 柳阳 ~ 刘洋 (liu yang)
        (by_name("张伟"), "p-003"),
        (by_name("柳阳"), "p-006"),
        // a romanized query meets the Chinese name through pinyin
        (by_name("Liu Yang"), "p-006"),
    ];
    for (query, want) in &cases {
        let got = index.candidates(query, 3)?;
        assert_eq!(
            got.first().map(|c| c.person_id.as_str()),
            Some(*want),
            "{query:?}: {got:?}"
        );
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score), "{got:?}");
    }
    // A matching ID number outranks a perfect match on everything else.
    let mixed = CandidateQuery {
        name: Some("李娜".into()),
        id_number: Some("990000198503030033".into()),
        birth_date: Some("1992-02-02".into()),
        phone: Some("13900000002".into()),
        address: Some("示例省虚构市银杏街12号".into()),
    };
    assert_eq!(ids(&index.candidates(&mixed, 2)?), ["p-003", "p-002"]);
    Ok(())
}

#[test]
fn homophone_only_match_is_found() -> TestResult {
    // Each pair shares no character, only the toneless pinyin.
    let cases = [("章玮", "张伟"), ("汪方", "王芳"), ("黎那", "李娜"), ("增明", "曾鸣")];
    for (indexed, queried) in cases {
        let (_tmp, index) = loaded(vec![person("p-1", 1, &[indexed])])?;
        let got = index.candidates(&by_name(queried), 5)?;
        assert_eq!(ids(&got), ["p-1"], "{indexed} / {queried}");
    }
    Ok(())
}

#[test]
fn unrelated_or_empty_queries_find_nothing() -> TestResult {
    let (_tmp, index) = loaded(sample())?;
    let cases = [
        CandidateQuery::default(),
        by_name(""),
        by_name("赵钱孙"),
        by_id("990000000000000000"),
        by_id("   "),
    ];
    for query in &cases {
        assert!(index.candidates(query, 10)?.is_empty(), "{query:?}");
    }
    assert!(index.candidates(&by_name("李娜"), 0)?.is_empty());
    Ok(())
}

#[test]
fn delete_removes() -> TestResult {
    let (_tmp, index) = loaded(sample())?;
    assert_eq!(ids(&index.candidates(&by_name("李娜"), 1)?), ["p-002"]);
    index.apply(vec![IndexOp::Delete {
        person_id: "p-002".into(),
    }])?;
    // not visible before the commit
    assert_eq!(index.num_persons(), 6);
    index.commit(2)?;
    assert_eq!(index.num_persons(), 5);
    let got = index.candidates(&by_name("李娜"), 10)?;
    assert!(!ids(&got).contains(&"p-002"), "{got:?}");
    assert!(index.candidates(&by_id("990000199202020022"), 10)?.is_empty());
    // deleting an unknown person is a no-op
    index.apply(vec![IndexOp::Delete {
        person_id: "p-unknown".into(),
    }])?;
    index.commit(3)?;
    assert_eq!(index.num_persons(), 5);
    let mut documents = index.documents()?;
    documents.sort();
    let mut expected: Vec<(String, u64)> = sample()
        .iter()
        .map(|doc| (doc.person_id.clone(), doc.version))
        .collect();
    expected.retain(|(id, _)| id != "p-002");
    expected.sort();
    assert_eq!(documents, expected);
    Ok(())
}

#[test]
fn upsert_twice_keeps_one_doc_at_latest_version() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let index = open(tmp.path())?;
    // across commits
    index.apply(upserts([with_ids(
        person("p-1", 1, &["孙小梅"]),
        &["990000200001010011"],
    )]))?;
    index.commit(1)?;
    index.apply(upserts([with_ids(
        person("p-1", 2, &["孙晓梅"]),
        &["990000200001010011"],
    )]))?;
    index.commit(2)?;
    // within one batch
    index.apply(upserts([
        person("p-2", 1, &["周一帆"]),
        person("p-2", 2, &["周逸凡"]),
        person("p-2", 3, &["周亦凡"]),
    ]))?;
    index.commit(3)?;

    assert_eq!(index.num_persons(), 2);
    let mut documents = index.documents()?;
    documents.sort();
    assert_eq!(documents, [("p-1".to_string(), 2), ("p-2".to_string(), 3)]);
    let got = index.candidates(&by_id("990000200001010011"), 10)?;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].person_id.as_str(), got[0].version), ("p-1", 2));
    let got = index.candidates(&by_name("周亦凡"), 10)?;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].person_id.as_str(), got[0].version), ("p-2", 3));
    // The old name's distinctive bigram is gone with the old version.
    let got = index.candidates(&by_name("小梅"), 10)?;
    assert!(
        got.iter().all(|c| c.score < 2.0 * query::weight::NAME_BIGRAM),
        "{got:?}"
    );
    Ok(())
}

#[test]
fn uncommitted_ops_are_invisible_and_rollback_discards_them() -> TestResult {
    let (tmp, index) = loaded(sample())?;
    index.apply(upserts([person("p-new", 1, &["冯子墨"])]))?;
    assert!(index.candidates(&by_name("冯子墨"), 5)?.is_empty());
    index.rollback()?;
    index.commit(2)?;
    assert!(index.candidates(&by_name("冯子墨"), 5)?.is_empty());
    assert_eq!(index.num_persons(), 6);
    // Dropping without commit also discards.
    index.apply(upserts([person("p-new", 1, &["冯子墨"])]))?;
    drop(index);
    let index = open(tmp.path())?;
    assert_eq!(index.watermark(), 2);
    assert!(index.candidates(&by_name("冯子墨"), 5)?.is_empty());
    Ok(())
}

#[test]
fn watermark_survives_reopen() -> TestResult {
    let tmp = tempfile::tempdir()?;
    {
        let index = open(tmp.path())?;
        index.apply(upserts(sample()))?;
        index.commit(17)?;
        assert_eq!(index.watermark(), 17);
        // an empty commit still advances the watermark
        index.commit(42)?;
    }
    let index = open(tmp.path())?;
    assert_eq!(index.watermark(), 42);
    assert_eq!(index.num_persons(), 6);
    assert_eq!(ids(&index.candidates(&by_name("李娜"), 1)?), ["p-002"]);
    Ok(())
}

#[test]
fn watermark_must_not_go_backwards() -> TestResult {
    let (_tmp, index) = loaded(sample())?;
    index.commit(10)?;
    index.commit(10)?;
    match index.commit(9) {
        Err(IndexError::WatermarkRegression { current, requested }) => {
            assert_eq!((current, requested), (10, 9));
        }
        other => panic!("expected WatermarkRegression, got {other:?}"),
    }
    assert_eq!(index.watermark(), 10);
    Ok(())
}

#[test]
fn reopening_another_format_version_is_incompatible() -> TestResult {
    let tmp = tempfile::tempdir()?;
    drop(open(tmp.path())?);
    layout::write_marker_text(tmp.path(), &format!("{}\n", FORMAT_VERSION + 1))?;
    match open(tmp.path()) {
        Err(IndexError::Incompatible { found, expected }) => {
            assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    // recreate fixes it
    let index = CandidateIndex::recreate(tmp.path(), &IndexConfig::default())?;
    assert_eq!(index.watermark(), 0);
    drop(index);
    open(tmp.path())?;
    Ok(())
}

#[test]
fn garbage_directories_are_corrupt_not_panics() -> TestResult {
    type Setup = fn(&Path) -> std::io::Result<()>;
    let cases: [(&str, Setup); 6] = [
        ("unrelated files", |d| fs::write(d.join("notes.txt"), "hello")),
        ("marker only", |d| {
            fs::write(d.join(layout::MARKER_FILE), format!("{}\n", crate::FORMAT_VERSION))
        }),
        ("binary marker", |d| {
            fs::write(d.join(layout::MARKER_FILE), [0xff, 0xfe, 0x00])
        }),
        ("garbage meta.json", |d| {
            fs::write(d.join(layout::MARKER_FILE), format!("{}\n", crate::FORMAT_VERSION))?;
            fs::write(d.join("meta.json"), "{ not json")
        }),
        ("tantivy files without marker", |d| {
            fs::write(d.join("meta.json"), "{}")?;
            fs::write(d.join(".managed.json"), "[]")
        }),
        ("empty managed list", |d| {
            fs::write(d.join(layout::MARKER_FILE), format!("{}\n", crate::FORMAT_VERSION))?;
            fs::write(d.join(".managed.json"), "garbage")?;
            fs::write(d.join("meta.json"), "")
        }),
    ];
    for (what, setup) in cases {
        let tmp = tempfile::tempdir()?;
        setup(tmp.path())?;
        match open(tmp.path()) {
            Err(e @ IndexError::Corrupt { .. }) => assert!(e.needs_rebuild(), "{what}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
        // recreate turns any of them into a working index
        let index = CandidateIndex::recreate(tmp.path(), &IndexConfig::default())?;
        index.apply(upserts(sample()))?;
        index.commit(5)?;
        assert_eq!(index.num_persons(), 6, "{what}");
    }
    Ok(())
}

#[test]
fn damaged_segment_files_are_reported_not_panicked() -> TestResult {
    let tmp = tempfile::tempdir()?;
    {
        let index = open(tmp.path())?;
        index.apply(upserts(sample()))?;
        index.commit(3)?;
    }
    // Truncate every segment file.
    for entry in fs::read_dir(tmp.path())? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.starts_with('.') && !name.starts_with("popmaster") && name != "meta.json" {
            fs::write(&path, b"")?;
        }
    }
    match open(tmp.path()) {
        Err(e) => assert!(e.needs_rebuild(), "{e:?}"),
        Ok(index) => {
            // tantivy may open lazily; searching must then fail cleanly
            let result = index.candidates(&by_name("李娜"), 3);
            assert!(result.is_err(), "{result:?}");
        }
    }
    Ok(())
}

#[test]
fn a_file_instead_of_a_directory_is_an_error() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("plain-file");
    fs::write(&file, "x")?;
    assert!(open(&file).is_err());
    Ok(())
}

#[test]
fn second_writer_on_same_directory_is_locked() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let _first = open(tmp.path())?;
    match open(tmp.path()) {
        Err(IndexError::Locked(_)) => Ok(()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn invalid_input_applies_nothing() -> TestResult {
    let (_tmp, index) = loaded(vec![])?;
    let too_long = "p".repeat(MAX_PERSON_ID_BYTES + 1);
    for bad in ["", too_long.as_str()] {
        let ops = upserts([person("p-ok", 1, &["韩雪松"]), person(bad, 1, &["韩雪松"])]);
        match index.apply(ops) {
            Err(IndexError::InvalidInput { .. }) => {}
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    index.commit(2)?;
    assert_eq!(index.num_persons(), 0);
    Ok(())
}

#[test]
fn invalid_config_is_rejected() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cases = [
        IndexConfig {
            writer_threads: 0,
            ..IndexConfig::default()
        },
        IndexConfig {
            writer_threads: 9,
            writer_memory_bytes: 9 * 20_000_000,
        },
        IndexConfig {
            writer_threads: 2,
            writer_memory_bytes: 20_000_000,
        },
    ];
    for config in &cases {
        match CandidateIndex::open(tmp.path(), config) {
            Err(IndexError::InvalidConfig { .. }) => {}
            other => panic!("{config:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    // nothing was created by the failed attempts
    assert_eq!(layout::inspect(tmp.path())?, layout::DirState::Empty);
    Ok(())
}

#[test]
fn ties_are_broken_by_person_id_across_segments() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let index = open(tmp.path())?;
    // Same name for everyone, inserted in scrambled order, one segment per commit.
    let order = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4];
    for (seq, n) in order.iter().enumerate() {
        index.apply(upserts([person(&format!("p-{n:02}"), 1, &["韩雪松"])]))?;
        index.commit(seq as u64 + 1)?;
    }
    let got = index.candidates(&by_name("韩雪松"), 4)?;
    assert_eq!(ids(&got), ["p-00", "p-01", "p-02", "p-03"]);
    assert!(got.iter().all(|c| c.score == got[0].score));
    let all = index.candidates(&by_name("韩雪松"), 100)?;
    let want: Vec<String> = (0..10).map(|n| format!("p-{n:02}")).collect();
    assert_eq!(ids(&all), want.iter().map(String::as_str).collect::<Vec<_>>());
    Ok(())
}

/// A little synthetic population with deliberate near-duplicates.
fn population() -> Vec<PersonDoc> {
    let surnames = ["张", "章", "李", "黎", "王", "汪", "欧阳", "司马"];
    let given = ["伟", "玮", "娜", "晓燕", "小燕", "子墨", "一帆", "逸凡"];
    let mut docs = Vec::new();
    let mut n = 0u32;
    for (i, s) in surnames.iter().enumerate() {
        for (j, g) in given.iter().enumerate() {
            n += 1;
            let mut doc = full(
                &format!("p-{n:03}"),
                1,
                &format!("{s}{g}"),
                &format!("9900001990{:02}{:02}{:04}", i + 1, j + 1, n),
                &format!("1990-{:02}-{:02}", i + 1, j + 1),
                &format!("139{n:08}"),
                &format!("示例省虚构市{}路{}号", given[(i + j) % given.len()], j + 1),
            );
            if n.is_multiple_of(5) {
                doc.names.push(format!("{}{}", surnames[(i + 1) % surnames.len()], g));
            }
            docs.push(doc);
        }
    }
    docs
}

fn probe_queries() -> Vec<CandidateQuery> {
    let mut queries: Vec<CandidateQuery> = [
        "张伟",
        "章玮",
        "李娜",
        "欧阳小燕",
        "司马逸凡",
        "王",
        "Zhang Wei",
        "Zhang Zimo",
    ]
    .into_iter()
    .map(by_name)
    .collect();
    queries.push(by_id("990000199001010001"));
    queries.push(CandidateQuery {
        name: Some("汪一帆".into()),
        birth_date: Some("1990-06-07".into()),
        ..CandidateQuery::default()
    });
    queries.push(CandidateQuery {
        address: Some("虚构市晓燕路3号".into()),
        phone: Some("13900000042".into()),
        ..CandidateQuery::default()
    });
    queries
}

#[test]
fn rebuilt_index_answers_like_the_incremental_one() -> TestResult {
    let pop = population();
    let config = IndexConfig::default();

    // Incremental: several commits, each person upserted up to three times, some deleted and
    // some resurrected; final state kept in a map.
    let inc_dir = tempfile::tempdir()?;
    let incremental = CandidateIndex::open(inc_dir.path(), &config)?;
    let mut final_state: BTreeMap<String, PersonDoc> = BTreeMap::new();
    let mut watermark = 0;
    for round in 0..3u64 {
        let mut ops = Vec::new();
        for (i, doc) in pop.iter().enumerate() {
            let mut doc = doc.clone();
            doc.version = round + 1;
            if round == 1 && i % 3 == 0 {
                // a changed name in round 2 (reverted in round 3 for some)
                doc.names = vec![format!("{}改", doc.names[0])];
            }
            if round == 2 && i % 3 == 0 && i % 2 == 0 {
                continue; // keep the round-2 version
            }
            final_state.insert(doc.person_id.clone(), doc.clone());
            ops.push(IndexOp::Upsert(doc));
            if i % 7 == round as usize {
                ops.push(IndexOp::Delete {
                    person_id: pop[i].person_id.clone(),
                });
                final_state.remove(&pop[i].person_id);
            }
        }
        // Apply in a few batches, committing after each.
        for chunk in ops.chunks(17) {
            incremental.apply(chunk.to_vec())?;
            watermark += 1;
            incremental.commit(watermark)?;
        }
    }

    // Rebuild: recreate and apply only the final docs, in reverse order, in one commit.
    let rebuilt_dir = tempfile::tempdir()?;
    fs::write(rebuilt_dir.path().join("leftover"), "stale")?;
    let rebuilt = CandidateIndex::recreate(rebuilt_dir.path(), &config)?;
    rebuilt.apply(upserts(final_state.values().rev().cloned()))?;
    rebuilt.commit(watermark)?;

    assert_eq!(incremental.num_persons(), final_state.len() as u64);
    assert_eq!(rebuilt.num_persons(), incremental.num_persons());
    for (q, query) in probe_queries().iter().enumerate() {
        for k in [1, 5, 50] {
            let a = incremental.candidates(query, k)?;
            let b = rebuilt.candidates(query, k)?;
            assert_eq!(a, b, "query #{q} k={k}");
            assert!(!a.is_empty(), "query #{q} k={k}");
            for c in &a {
                let doc = final_state.get(&c.person_id).expect("only live persons are returned");
                assert_eq!(c.version, doc.version);
            }
        }
    }
    Ok(())
}

#[test]
fn concurrent_search_while_applying() -> TestResult {
    let (_tmp, index) = loaded(sample())?;
    let index = std::sync::Arc::new(index);
    let searcher = {
        let index = std::sync::Arc::clone(&index);
        std::thread::spawn(move || -> Result<(), IndexError> {
            for _ in 0..50 {
                let got = index.candidates(&by_name("李娜"), 3)?;
                assert_eq!(got.first().map(|c| c.person_id.as_str()), Some("p-002"));
            }
            Ok(())
        })
    };
    for w in 2..12 {
        index.apply(upserts([person(&format!("q-{w}"), 1, &["邓子墨"])]))?;
        index.commit(w)?;
    }
    searcher.join().map_err(|_| "search thread panicked")??;
    assert_eq!(index.num_persons(), 16);
    Ok(())
}

mod top_k_equivalence {
    use super::*;
    use proptest::prelude::*;

    const SURNAMES: [&str; 6] = ["王", "张", "章", "李", "欧阳", "刘"];
    const GIVEN: [&str; 8] = ["伟", "玮", "娜", "芳", "晓燕", "小燕", "洋", "明"];
    const DATES: [&str; 4] = ["1990-01-01", "1992-02-02", "1985-03-03", "1990-01-10"];
    const STREETS: [&str; 3] = ["梧桐路8号", "银杏街12号", "柳树村3组"];

    fn name() -> impl Strategy<Value = String> {
        (0..SURNAMES.len(), 0..GIVEN.len(), 0..GIVEN.len(), any::<bool>()).prop_map(|(s, g1, g2, two)| {
            if two {
                format!("{}{}{}", SURNAMES[s], GIVEN[g1], GIVEN[g2])
            } else {
                format!("{}{}", SURNAMES[s], GIVEN[g1])
            }
        })
    }

    /// Service ids (`P` and 16 hex digits) and others, mixed.
    fn id(n: usize) -> String {
        if n.is_multiple_of(3) {
            format!("p-{n:04}")
        } else {
            format!("P{:016X}", 0x4000_0000_0000_0000u64 + n as u64 * 7)
        }
    }

    fn doc(n: usize) -> impl Strategy<Value = PersonDoc> {
        (
            proptest::collection::vec(name(), 0..3),
            proptest::option::of(0..DATES.len()),
            proptest::option::of(0..STREETS.len()),
            proptest::option::of(0..4u8),
        )
            .prop_map(move |(names, date, street, phone)| PersonDoc {
                person_id: id(n),
                version: 1,
                names,
                id_numbers: vec![],
                birth_dates: date.map(|d| DATES[d].to_string()).into_iter().collect(),
                phones: phone.map(|p| format!("1390000000{p}")).into_iter().collect(),
                addresses: street
                    .map(|s| format!("示例省虚构市{}", STREETS[s]))
                    .into_iter()
                    .collect(),
            })
    }

    fn docs() -> impl Strategy<Value = Vec<PersonDoc>> {
        (1usize..60).prop_flat_map(|n| (0..n).map(doc).collect::<Vec<_>>())
    }

    fn query() -> impl Strategy<Value = CandidateQuery> {
        (
            proptest::option::of(name()),
            proptest::option::of(0..DATES.len()),
            proptest::option::of(0..STREETS.len()),
            proptest::option::of(0..4u8),
        )
            .prop_map(|(name, date, street, phone)| CandidateQuery {
                name,
                birth_date: date.map(|d| DATES[d].to_string()),
                address: street.map(|s| format!("示例省虚构市{}", STREETS[s])),
                phone: phone.map(|p| format!("1390000000{p}")),
                ..CandidateQuery::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The MaxScore executor gives exactly what tantivy's collector gives over the boolean
        /// query: the same persons, scores and order, across segments and deletions; and the
        /// ids it finds through a service id's postings are those of the dictionary.
        #[test]
        fn top_k_is_what_the_collector_finds(
            first in docs(),
            second in docs(),
            deleted in proptest::collection::vec(0usize..60, 0..10),
            queries in proptest::collection::vec(query(), 1..8),
            k in 1usize..12,
        ) {
            let tmp = tempfile::tempdir().expect("temp dir");
            let index = open(tmp.path()).expect("open");
            // Two commits: two segments, the second replacing some persons of the first.
            index.apply(upserts(first)).expect("apply");
            index.commit(1).expect("commit");
            index.apply(upserts(second)).expect("apply");
            let deletes = deleted
                .into_iter()
                .map(|n| IndexOp::Delete { person_id: id(n) })
                .collect();
            index.apply(deletes).expect("apply");
            index.commit(2).expect("commit");
            for query in &queries {
                let expected = index.candidates_by_collector(query, k).expect("collector");
                let found = index.candidates(query, k).expect("top k");
                prop_assert_eq!(&found, &expected, "{:?}", query);
            }
        }
    }
}

/// A service id is found through its postings; any other id is left to the dictionary.
#[test]
fn service_ids_are_read_without_the_dictionary() -> TestResult {
    let service = "P00000000000ABCDE";
    let (_tmp, index) = loaded(vec![person(service, 1, &["王芳"]), person("p-legacy", 1, &["王芳"])])?;
    let searcher = index.reader.searcher();
    let mut found = BTreeMap::new();
    for segment in searcher.segment_readers() {
        let keys = segment.fast_fields().u64(schema::PERSON_KEY)?;
        for doc in 0..segment.max_doc() {
            let key = keys.first(doc).expect("a key");
            found.insert(key, index.service_id_of(segment, doc, key)?);
        }
    }
    assert_eq!(
        found.get(&schema::person_key(service)),
        Some(&Some(service.to_string()))
    );
    assert_eq!(found.get(&schema::person_key("p-legacy")), Some(&None));
    let by_name = index.candidates(&by_name("王芳"), 5)?;
    let mut ids: Vec<&str> = by_name.iter().map(|c| c.person_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["P00000000000ABCDE", "p-legacy"]);
    Ok(())
}
