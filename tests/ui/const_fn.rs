#[pals::exclusive]
const fn job() -> u32 {
    1
}

fn main() {}
