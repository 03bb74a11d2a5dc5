//! Outbound HTTP: `client` (one hyper client, plain or TLS with the machine's roots, connecting to
//! an address already checked) and `web_download` (the rules an image URL must pass: http(s)
//! only, ports 80 and 443, public addresses only, every redirect checked the same way).

pub mod client;
pub mod web_download;
