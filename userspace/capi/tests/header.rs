//! The committed header, include/xrudp.h, is what cbindgen generates from the crate today:
//! a stale header fails here (and so in scripts/test.sh). `XRUDP_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn header_matches_the_code() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("cbindgen writes UTF-8");
    let path = crate_dir.join("include/xrudp.h");
    if std::env::var_os("XRUDP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing include/xrudp.h");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "userspace/capi/include/xrudp.h is stale: the C API changed and the header did not. \
         Regenerate it with `XRUDP_BLESS=1 cargo test -p xrudp-capi --test header` and \
         commit it."
    );
}
