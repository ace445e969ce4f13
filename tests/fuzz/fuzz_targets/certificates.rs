//! What the control plane's CA parses: a node's certificate signing request (from the
//! network, at enrollment and renewal) and certificates (PEM and DER). Never a panic; a
//! certificate issued from any CSR names the node the control plane chose, not whatever the
//! CSR says.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use wedge_pki::Ca;

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wedge-fuzz-ca-{}", std::process::id()));
        let ca = Ca::load_or_create(&dir).expect("a CA in a temporary directory");
        let _ = std::fs::remove_dir_all(&dir);
        ca
    })
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = wedge_pki::inspect(input);
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let _ = wedge_pki::inspect_pem(text);
    let _ = wedge_pki::fingerprint_pem(text);
    if let Ok(cert) = ca().issue_node("edge-1", text, Duration::from_secs(3600)) {
        let identity = wedge_pki::inspect_pem(&cert).expect("an issued certificate parses");
        assert_eq!(identity.common_name, "edge-1");
    }
});
