//! `#[pals::exclusive]` without `locker =` uses the global locker. Its own test binary: the
//! global locker is process-wide.

use std::sync::LazyLock;

static APP: LazyLock<String> = LazyLock::new(|| pals_tests::unique_app("global-attr"));

#[pals::exclusive(name = "nightly", timeout = "0", on_busy = "skip")]
async fn nightly() -> Option<&'static str> {
    Some("ran")
}

#[pals::exclusive(timeout = "0")]
fn migrate() -> Result<&'static str, pals::Error> {
    Ok("migrated")
}

#[tokio::test]
async fn uses_the_global_locker() {
    pals::init(pals_tests::locker(&APP)).unwrap();
    let other = pals_tests::locker(&APP);
    assert_eq!(nightly().await, Some("ran"));
    let held = other.lock("nightly").acquire().await.unwrap();
    assert_eq!(nightly().await, None);
    assert!(held.release().await.unwrap());

    let migration = other
        .lock(concat!(module_path!(), "::migrate"))
        .acquire()
        .await
        .unwrap();
    let err = tokio::task::spawn_blocking(migrate)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(migration.release().await.unwrap());
    assert_eq!(
        tokio::task::spawn_blocking(migrate).await.unwrap().unwrap(),
        "migrated"
    );
}
