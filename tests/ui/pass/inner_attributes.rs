//! Inner attributes of the body stay in the body, where they apply: without its
//! `#![allow(unused_variables)]`, the unused variable would be an error here.
#![deny(warnings)]

#[pals::exclusive(name = "job")]
fn job() -> Result<(), pals::Error> {
    #![allow(unused_variables)]
    let unused = 1;
    Ok(())
}

#[pals::exclusive(name = "job")]
async fn async_job() {
    #![allow(unused_variables)]
    //! An inner doc comment is an inner attribute too.
    let unused = 1;
}

fn main() {
    let _ = job;
    drop(async_job());
}
