//! basalt: a disk-first approximate nearest-neighbour search engine
//! (DiskANN done as a product). See ARCHITECTURE.md for the map of modules.
#![deny(unsafe_code)]

pub mod cli;
pub mod collection;
pub mod distance;
pub mod element;
pub mod format;
pub mod fsutil;
pub mod groundtruth;
pub mod recall;
pub mod server;
pub mod synth;
pub mod topk;
pub mod vamana;
pub mod vecfile;
pub mod wal;

/// Largest worker thread count any command accepts.
pub const THREADS_MAX: usize = 1024;
pub mod index;
pub mod io;
pub mod plan;
pub mod pq;
pub mod search;
