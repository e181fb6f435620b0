//! The README's Quick start, as written (copied by build.rs).

include!(concat!(env!("OUT_DIR"), "/quick_start.rs"));
