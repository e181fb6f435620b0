//! Beside tokio's attributes, in either order. (`#[tokio::test]` functions are compiled
//! here only as far as macro expansion: a `#[test]` is left out of this non-test build.
//! tests/tests/exclusive_forms.rs runs them; `#[tokio::main]` expands the same way and is
//! compiled in full here.)
#![deny(warnings)]

#[tokio::test]
#[pals::exclusive(name = "under")]
async fn under_tokio_test() {}

#[pals::exclusive(name = "over")]
#[tokio::test]
async fn over_tokio_test() -> Result<(), pals::Error> {
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
#[pals::exclusive(name = "under-main")]
async fn under_tokio_main() {}

#[pals::exclusive(name = "over-main")]
#[tokio::main(flavor = "current_thread")]
async fn over_tokio_main() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {
    let _: fn() = under_tokio_main;
    let _: fn() -> Result<(), pals::Error> = over_tokio_main;
}
