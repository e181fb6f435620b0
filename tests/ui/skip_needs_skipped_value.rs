#[pals::exclusive(name = "job", on_busy = "skip")]
fn job() -> u32 {
    1
}

#[pals::exclusive(name = "job", on_busy = "skip")]
fn opaque() -> impl Iterator<Item = u32> {
    0..3
}

fn main() {}
