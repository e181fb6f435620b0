//! The global locker configured from the environment. Its own test binary: the global is
//! process-wide, and this test changes the environment.

#[test]
fn global_is_not_configured_then_comes_from_the_environment() {
    let url = pals_tests::db_url(); // read from the same variable, before it is removed
    std::env::remove_var(pals::DATABASE_URL_ENV);
    std::env::remove_var(pals::APP_NAME_ENV);
    let err = pals::global().unwrap_err();
    assert!(matches!(err, pals::Error::NotConfigured));
    let message = err.to_string();
    assert!(message.contains("pals::init"), "{message}");
    assert!(
        message.contains("PALS_DB_URL") && message.contains("PALS_APP_NAME"),
        "{message}"
    );

    // The URL alone is not enough: the app name is required.
    std::env::set_var(pals::DATABASE_URL_ENV, url.clone());
    assert!(matches!(pals::global(), Err(pals::Error::NotConfigured)));

    // The old variable's name alone is an error that names the new one.
    std::env::remove_var(pals::DATABASE_URL_ENV);
    std::env::set_var(pals::APP_NAME_ENV, "from-env");
    std::env::set_var("PALS_DATABASE_URL", url.clone());
    let err = pals::init_from_env().unwrap_err();
    assert!(err.is_misconfiguration());
    assert!(err.to_string().contains("PALS_DB_URL"), "{err}");
    std::env::remove_var("PALS_DATABASE_URL");

    std::env::set_var(pals::DATABASE_URL_ENV, url.clone());
    let locker = pals::global().unwrap();
    assert_eq!(locker.app(), "from-env");
    assert!(std::ptr::eq(locker, pals::global().unwrap()), "built once");

    let guard = locker
        .lock(&pals_tests::unique_app("g"))
        .blocking_acquire()
        .unwrap();
    assert!(guard.blocking_release().unwrap());

    let again = pals::Locker::new("other", &url).unwrap();
    assert!(matches!(
        pals::init(again),
        Err(pals::Error::AlreadyInitialized)
    ));
    assert_eq!(pals::global().unwrap().app(), "from-env");
}
