//! Compile errors of `#[pals::exclusive]`: each points at the bad argument and says what to
//! write instead. The expected messages are the `.stderr` files beside the cases in `ui/`.

#[test]
fn bad_attribute_input_is_a_precise_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
