#[pals::exclusive(name = "export", permits = 0)]
fn none_allowed() -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "export", permits = "three")]
fn not_a_number() -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "export", permits = 3, shared = true)]
fn shared_permit() -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "export", permits = 3, fenced = true)]
async fn fenced_permit() -> Result<(), pals::Error> {
    Ok(())
}

#[pals::exclusive(name = "export", permits = 5000000000)]
fn too_many() -> Result<(), pals::Error> {
    Ok(())
}

fn main() {}
