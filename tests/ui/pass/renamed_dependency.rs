//! `crate = path` with a path to pals other than `::pals`: here through the re-export of
//! a crate that has pals as a dependency under another name. (That crate,
//! tests/ui/renamed_dependency, compiles `#[pals_renamed::exclusive(crate = pals_renamed)]`
//! without any `pals` in scope; the integration tests run its functions.)
use pals_renamed_dependency::pals_renamed as vendored_pals;

#[vendored_pals::exclusive(crate = pals_renamed_dependency::pals_renamed, name = "job")]
fn job() {}

#[vendored_pals::exclusive(crate = "vendored_pals", name = "job-{n}", on_busy = "skip")]
async fn async_job(n: u32) -> Option<u32> {
    Some(n)
}

fn main() {
    let _: fn() = job;
    drop(async_job(1));
    let _ = pals_renamed_dependency::sync_job;
}
