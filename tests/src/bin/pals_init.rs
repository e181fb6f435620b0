//! Test helper: a program's start-up, `pals::init_from_env()` with the environment it is
//! given; what pals logs is printed (`INFO message=...`), then `ok` and exit 0, or the
//! error and exit 1.

fn main() {
    let printing = pals_tests::events::Recorder::printing();
    tracing::subscriber::set_global_default(printing).expect("no other subscriber");
    match pals::init_from_env() {
        Ok(locker) => println!("ok {}", locker.app()),
        Err(error) => {
            println!("error: {error}");
            std::process::exit(1);
        }
    }
}
