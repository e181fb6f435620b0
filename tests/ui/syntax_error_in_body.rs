// A function the attribute cannot read gets syn's own error, pointing into the body, not
// "goes on a function".
#[pals::exclusive(name = "job")]
fn job() -> Result<(), pals::Error> {
    let x = 1 +;
    Ok(())
}

fn main() {}
