//! The deployment request an operator posts (`POST /api/v1/deployments`, JSON): parsed and
//! checked as the API does before anything is stored. Never a panic.
#![no_main]

use wedge_control_plane::api::deployments::{DeploymentRequest, validate};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<DeploymentRequest>(input) {
        let _ = validate(&req);
    }
});
