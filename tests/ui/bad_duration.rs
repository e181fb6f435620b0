#[pals::exclusive(timeout = "5 seconds")]
fn job() -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(min_hold = "forever")]
fn other_job() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
