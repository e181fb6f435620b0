//! The text of a database URL or of libpq's key=value pairs: split into parameters, with
//! a message for what cannot be read, and shown without its password.

/// The parameters whose values messages never show.
const SECRETS: &[&str] = &["password", "sslpassword"];

/// `url` with any secret in it (the password, the client key's `sslpassword`) replaced by
/// `***`, for messages. Query keys are read decoded (`p%61ssword` is `password`).
pub(super) fn mask_password(url: &str) -> String {
    if let Some(rest) = strip_scheme(url) {
        let scheme = &url[..url.len() - rest.len()];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hosts}"),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let tail = tail
            .split('&')
            .map(|part| {
                let (lead, pair) = part.split_at(part.find('?').map_or(0, |q| q + 1));
                match pair.split_once('=') {
                    Some((key, _)) if SECRETS.contains(&percent_decode(key).as_str()) => {
                        format!("{lead}{key}=***")
                    }
                    _ => part.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        return format!("{scheme}{authority}{tail}");
    }
    match key_value_pairs(url) {
        Ok(pairs) => {
            let mut masked = String::new();
            let mut copied = 0;
            for pair in pairs.iter().filter(|p| SECRETS.contains(&p.key.as_str())) {
                masked.push_str(&url[copied..pair.start]);
                masked.push_str(&format!("{}=***", pair.key));
                copied = pair.end;
            }
            masked.push_str(&url[copied..]);
            masked
        }
        Err(_) => url.to_string(),
    }
}

pub(super) fn strip_scheme(url: &str) -> Option<&str> {
    url.strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
}

/// The parts of `postgresql://` + `rest`: `[user[:password]@][host[:port][,...]][/dbname][?k=v&...]`.
pub(super) fn parse_url(rest: &str) -> Result<Vec<(String, String)>, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = rest.split_once('/').unwrap_or((rest, ""));
    let mut pairs = Vec::new();
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_string(), percent_decode(user)));
            }
            if let Some(password) = password {
                pairs.push(("password".to_string(), percent_decode(password)));
            }
            hosts
        }
        None => authority,
    };
    let (mut host_list, mut port_list) = (Vec::new(), Vec::new());
    for spec in hosts.split(',').filter(|_| !hosts.is_empty()) {
        let (host, port) = split_host_port(spec)?;
        host_list.push(percent_decode(host));
        port_list.push(port.unwrap_or_default().to_string());
    }
    if host_list.iter().any(|h| !h.is_empty()) {
        pairs.push(("host".to_string(), host_list.join(",")));
    }
    if port_list.iter().any(|p| !p.is_empty()) {
        pairs.push(("port".to_string(), port_list.join(",")));
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".to_string(), percent_decode(dbname)));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("`{pair}` in the query has no `=value`"));
        };
        pairs.push((percent_decode(key), percent_decode(value)));
    }
    Ok(pairs)
}

/// `host[:port]`, or `[ipv6][:port]`.
pub(super) fn split_host_port(spec: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = spec.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!(
                "`{spec}` opens `[` for an IPv6 address and never closes it"
            ));
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected `{after}` after `[{host}]`")),
            },
        };
    }
    Ok(match spec.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (spec, None),
    })
}

/// `%XX` escapes decoded; anything else kept as it is.
pub(super) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `key = value` pair of a libpq key=value string, with where it stands.
pub(super) struct Pair {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The pairs of a libpq key=value string: spaces around `=` allowed, values bare or in
/// single quotes, a backslash escaping the next character.
pub(super) fn key_value_pairs(text: &str) -> Result<Vec<Pair>, String> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_spaces(&mut i);
        if i >= bytes.len() {
            return Ok(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_string();
        skip_spaces(&mut i);
        if i >= bytes.len() || bytes[i] != b'=' {
            return Err(format!("`{key}` is not followed by `=`"));
        }
        i += 1;
        skip_spaces(&mut i);
        let (value, next) = value_at(bytes, i, &key)?;
        i = next;
        pairs.push(Pair {
            key,
            value,
            start,
            end: i,
        });
    }
}

/// The value of `key` that starts at `i`: bare, or in single quotes, a backslash escaping
/// the next character; and where it ends.
fn value_at(bytes: &[u8], mut i: usize, key: &str) -> Result<(String, usize), String> {
    let mut value = Vec::new();
    if i < bytes.len() && bytes[i] == b'\'' {
        i += 1;
        loop {
            match bytes.get(i) {
                None => return Err(format!("the quoted value of `{key}` has no closing quote")),
                Some(b'\'') => {
                    i += 1;
                    break;
                }
                Some(b'\\') if i + 1 < bytes.len() => {
                    value.push(bytes[i + 1]);
                    i += 2;
                }
                Some(&b) => {
                    value.push(b);
                    i += 1;
                }
            }
        }
    } else {
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
            }
            value.push(bytes[i]);
            i += 1;
        }
    }
    Ok((String::from_utf8_lossy(&value).into_owned(), i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_and_bad_escapes() {
        assert_eq!(percent_decode("%2Fx%+1%zz%"), "/x%+1%zz%");
        assert_eq!(percent_decode("a%20b"), "a b");
    }
}
