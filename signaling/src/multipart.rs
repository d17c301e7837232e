//! `multipart/form-data` (RFC 7578), as far as `POST /v1/realtime/calls` needs it: the text
//! fields of a bounded body, by name (the OpenAI SDKs send the offer as `sdp` and the session as
//! `session` this way). Files and nested multiparts are not looked at.

use crate::error::ApiError;

/// Parts beyond this are refused (the calls endpoint takes two).
const MAX_PARTS: usize = 8;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && (1..=70).contains(&v.len())).then(|| v.to_string())
    })
}

/// The form's fields as (name, value).
pub fn fields(body: &[u8], boundary: &str) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let bad = |m: &str| ApiError::bad_request("invalid_multipart", format!("the multipart body is malformed: {m}"));
    let delimiter = format!("--{boundary}");
    let mut rest = find(body, delimiter.as_bytes()).map(|i| &body[i + delimiter.len()..]).ok_or_else(|| bad("no boundary"))?;
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest.strip_prefix(b"\r\n").ok_or_else(|| bad("no line break after a boundary"))?;
        let end_of_headers = find(rest, b"\r\n\r\n").ok_or_else(|| bad("a part without a blank line after its headers"))?;
        let headers = std::str::from_utf8(&rest[..end_of_headers]).map_err(|_| bad("headers are not UTF-8"))?;
        let name = headers
            .split("\r\n")
            .filter_map(|h| h.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .find_map(|(_, v)| v.split(';').find_map(|p| p.trim().strip_prefix("name=").map(|n| n.trim_matches('"').to_string())))
            .ok_or_else(|| bad("a part without a name"))?;
        let value_and_rest = &rest[end_of_headers + 4..];
        let close = format!("\r\n{delimiter}");
        let end = find(value_and_rest, close.as_bytes()).ok_or_else(|| bad("a part that never ends"))?;
        if out.len() == MAX_PARTS {
            return Err(bad("too many parts"));
        }
        out.push((name, value_and_rest[..end].to_vec()));
        rest = &value_and_rest[end + close.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_form_is_read_field_by_field() {
        let ct = "multipart/form-data; boundary=a1b2c3";
        let body = "--a1b2c3\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\nv=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n\r\n\
                    --a1b2c3\r\nContent-Disposition: form-data; name=\"session\"\r\nContent-Type: application/json\r\n\r\n{\"type\":\"realtime\"}\r\n\
                    --a1b2c3--\r\n";
        let f = fields(body.as_bytes(), &boundary(ct).unwrap()).unwrap();
        assert_eq!(f[0].0, "sdp");
        assert_eq!(f[0].1, b"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n");
        assert_eq!((f[1].0.as_str(), f[1].1.as_slice()), ("session", &b"{\"type\":\"realtime\"}"[..]));
        assert_eq!(boundary("multipart/form-data; boundary=\"q q\"").as_deref(), Some("q q"));
        assert_eq!(boundary("application/sdp"), None);
    }

    #[test]
    fn malformed_forms_are_refused() {
        for body in [
            "",
            "--b\r\nno blank line",
            "--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--",
            "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nnever ends",
        ] {
            assert_eq!(fields(body.as_bytes(), "b").unwrap_err().code, "invalid_multipart", "{body:?}");
        }
    }
}
