//! 1e9 addressing: a graph file whose header says one billion nodes (a
//! sparse file of about 780 GiB that takes a few KiB of disk) opens, and
//! node 900,000,000's record is read through both readers (io_uring and
//! pread) at its 64-bit offset and verified; the id map takes slots near
//! 2^32 and ids at u64::MAX (and a payload index over them), and the live
//! collection's WAL logs and replays ids at u64::MAX. A graph writer
//! refuses a count past `NODES_MAX`.
//!
//! What this does not cover: opening a whole 1e9 index (`Index::open`)
//! needs its PQ codes in RAM (1e9 x 32 bytes), which this box does not have;
//! that is the design (codes in RAM steer the search), sized by `basalt plan`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use basalt::collection::config::CollectionConfig;
use basalt::collection::filter::Filter;
use basalt::collection::idmap::{Change, IdMap};
use basalt::collection::ids::ExternalId;
use basalt::collection::pindex::Schema;
use basalt::collection::{Collection, CollectionOptions, PointIn};
use basalt::distance::Metric;
use basalt::element::ElementType;
use basalt::format::FileIdent;
use basalt::format::graph::{GraphHeader, GraphWriter, read_graph_header};
use basalt::io::{ReadRequest, ReaderKind, make_reader, open_direct};

const N: u64 = 1_000_000_000;
const DIM: u32 = 128;
const R: u32 = 64;

fn vector(id: u32) -> Vec<f32> {
    (0..DIM).map(|i| (id as f32) * 1e-9 + i as f32).collect()
}

fn neighbors(id: u32) -> Vec<u32> {
    // Neighbours far apart, some past 2^31, all below N and none the node.
    let far = ((u64::from(id) + N / 2) % N) as u32;
    vec![id - 1, ((u64::from(id) + 1) % N) as u32, far, 7]
}

#[test]
fn a_billion_node_graph_reads_node_900m_at_its_64_bit_offset() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("graph");
    let header = GraphHeader {
        metric: Metric::L2,
        element: ElementType::F32,
        dim: DIM,
        degree_max: R,
        count: N,
        medoid: 0,
        pq_chunks: 32,
        list_size: 100,
        alpha: 1.2,
        passes: 2,
        seed: 1,
        ident: FileIdent::new_random(0),
        ip_norm_max: 0.0,
        placement: Default::default(),
    };
    let layout = header.layout();
    // 512 + 4 + 256 + 4 = 776 bytes a record, 5 a sector.
    assert_eq!((layout.record_bytes, layout.records_per_sector), (776, 5));
    let target: u32 = 900_000_000;
    let want_offset: u64 = (1 + 900_000_000u64 / 5) * 4096;
    assert_eq!(layout.record_offset(target), want_offset);
    assert!(want_offset > u64::from(u32::MAX), "the offset needs 64 bits");
    assert_eq!(layout.file_bytes(), (1 + N / 5) * 4096);

    let f = OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("create");
    f.set_len(layout.file_bytes()).expect("sparse file");
    f.write_all_at(&header.encode(), 0).expect("header");
    let ids = [target, target + 3, (N - 1) as u32];
    for &id in &ids {
        let mut rec = vec![0u8; layout.record_bytes as usize];
        layout.encode_record(id, &vector(id), &neighbors(id), &mut rec);
        f.write_all_at(&rec, layout.record_offset(id)).expect("record");
    }
    f.sync_all().expect("sync");
    drop(f);
    // Sparse: the file is far larger than the blocks it holds.
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.len(), layout.file_bytes());
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 1 << 20);

    let opened = read_graph_header(&path).expect("a 1e9-node header opens");
    assert_eq!(opened, header);
    // Past NODES_MAX (ids are u32, u32::MAX kept free) a writer refuses.
    let over = GraphHeader { count: basalt::format::NODES_MAX + 1, ..header.clone() };
    let e = GraphWriter::create(&dir.path().join("over"), &over).err().expect("refused");
    assert!(e.to_string().contains("NODES_MAX"), "{e}");
    for kind in [ReaderKind::Uring, ReaderKind::Pread] {
        let (file, _direct) = open_direct(&path).expect("open");
        let mut reader = make_reader(kind, Arc::new(file), path.clone(), 4, 1).expect("reader");
        let reqs: Vec<ReadRequest> = ids
            .iter()
            .map(|&id| ReadRequest {
                offset: layout.sector_of(id) * 4096,
                sectors: layout.sectors_per_record,
            })
            .collect();
        reader.read(&reqs).expect("read");
        for (i, &id) in ids.iter().enumerate() {
            let at = layout.offset_in_sector(id);
            let bytes = &reader.data(i)[at..at + layout.record_bytes as usize];
            let rec = layout.decode_record(id, bytes, true).expect("record verifies");
            let mut v = vec![0f32; DIM as usize];
            rec.vector_into(&mut v);
            assert_eq!(v, vector(id), "{kind:?} node {id}");
            assert_eq!(rec.neighbors().collect::<Vec<_>>(), neighbors(id), "{kind:?} node {id}");
            // Read as another node, the same bytes fail their checksum.
            assert!(layout.decode_record(id - 1, bytes, true).is_err());
        }
    }
}

#[test]
fn the_id_map_takes_slots_near_2_32_and_ids_at_u64_max() {
    let dir = tempfile::tempdir().expect("tmp");
    let map = IdMap::open(dir.path()).expect("open");
    map.create_index("k", Schema::Keyword).expect("index");
    let top = u32::MAX - 1;
    let big = ExternalId::Num(u64::MAX);
    let s = ExternalId::from_string("a-string-id").expect("id");
    let ch = vec![
        Change::Put { id: big.clone(), slot: top, payload: Some(r#"{"k": "x"}"#.into()) },
        Change::Put { id: s.clone(), slot: top - 1, payload: Some(r#"{"k": "x"}"#.into()) },
        Change::Put { id: ExternalId::Num(0), slot: 0, payload: None },
    ];
    map.apply(&ch, FileIdent::new_random(3)).expect("apply");
    assert_eq!(map.get(&big).expect("get"), Some(top));
    assert_eq!(map.get(&s).expect("get"), Some(top - 1));
    let all = map.scroll(None, 10).expect("scroll");
    assert_eq!(all, vec![(ExternalId::Num(0), 0), (big.clone(), top), (s.clone(), top - 1)]);
    let f =
        Filter::parse(&serde_json::json!({"must": [{"key": "k", "match": {"value": "x"}}]}), "f")
            .expect("filter");
    let r = map.resolve(&f, u32::MAX, usize::MAX).expect("resolve");
    assert!(r.exact);
    assert_eq!(r.set.expect("set").iter().collect::<Vec<_>>(), vec![top - 1, top]);
    let not = Filter::parse(
        &serde_json::json!({"must_not": [{"key": "k", "match": {"value": "x"}}]}),
        "f",
    )
    .expect("filter");
    let r = map.resolve(&not, u32::MAX, usize::MAX).expect("resolve");
    let set = r.set.expect("set");
    assert_eq!(set.len(), u64::from(u32::MAX) - 2, "the complement over 2^32 - 1 slots");
    assert!(!set.contains(top) && set.contains(0));
}

#[test]
fn the_wal_logs_and_replays_ids_at_u64_max() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = CollectionConfig::new(4, Metric::L2, ElementType::F32);
    Collection::create(dir.path(), &c).expect("create");
    let opts = || CollectionOptions { no_auto_merge: true, ..CollectionOptions::default() };
    let coll = Collection::open(dir.path(), opts()).expect("open");
    let ids = [ExternalId::Num(u64::MAX), ExternalId::Num(u64::from(u32::MAX) + 1)];
    let pts: Vec<PointIn> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| PointIn {
            id: id.clone(),
            vector: vec![i as f32, 1.0, 2.0, 3.0],
            payload: None,
        })
        .collect();
    coll.upsert(&pts).expect("upsert");
    coll.close();
    let coll = Collection::open(dir.path(), opts()).expect("reopen replays the WAL");
    for (i, id) in ids.iter().enumerate() {
        let p = coll.get(id).expect("get").expect("present after replay");
        assert_eq!(p.vector, vec![i as f32, 1.0, 2.0, 3.0]);
    }
    // Through a merge: ids stay 64-bit in the generation's ids file.
    coll.merge_now(&basalt::collection::merge::NoProgress).expect("merge");
    for id in &ids {
        assert!(coll.get(id).expect("get").is_some(), "{id} after the merge");
    }
}
