#[pals::exclusive(name = "job", crate = "not a path")]
fn job() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
