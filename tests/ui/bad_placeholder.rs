#[pals::exclusive(name = "tenant-{tenant}")]
fn job(tenant_id: u32) -> Result<(), pals::Error> {
    let _ = tenant_id;
    Ok(())
}

#[pals::exclusive(name = "tenant-{tenant_id")]
fn other_job(tenant_id: u32) -> Result<(), pals::Error> {
    let _ = tenant_id;
    Ok(())
}

fn main() {}
