//! The token endpoint's answer (Entra ID, IMDS, App Service) over arbitrary bytes: as a 200
//! (`access_token`, `expires_in` or `expires_on`, numbers or strings) and as a refusal (AADSTS
//! code, description, ids) with the statuses Entra ID uses. Never a panic; a token's lifetime
//! stays within the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use office365_activations_exporter::credentials::entra::{
    parse_token_response, rejection, MAX_TOKEN_LIFETIME,
};
use tokio::time::Instant;

fuzz_target!(|body: &[u8]| {
    let sent = Instant::now();
    match parse_token_response(body, sent) {
        Ok(token) => assert!(token.expires_at <= sent + MAX_TOKEN_LIFETIME),
        Err(error) => {
            let _ = error.to_string();
        }
    }
    for status in [400, 401, 429, 503] {
        let error = rejection(status, body, None);
        let _ = (error.to_string(), error.reason(), error.stage());
    }
});
