#[pals::exclusive(name = "job", timeot = "5s")]
fn job() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
