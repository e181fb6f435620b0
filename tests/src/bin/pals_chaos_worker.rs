//! A worker process of the chaos test (tests/tests/chaos.rs), which starts it with the
//! `PALS_CHAOS_*` variables set: see `pals_tests::chaos`.

fn main() {
    pals_tests::chaos::worker();
}
