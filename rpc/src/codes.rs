//! The schema's `ErrorCode` as the text that starts every exception description
//! (`not_found: no table x`), both ways. Server and client use these two functions only, so the
//! set of codes is the schema's and cannot drift.

pub use tessera_schema::tessera_capnp::ErrorCode;

const ALL: [ErrorCode; 12] = [
    ErrorCode::Unauthenticated,
    ErrorCode::Permission,
    ErrorCode::Sql,
    ErrorCode::NotFound,
    ErrorCode::Invalid,
    ErrorCode::Overloaded,
    ErrorCode::Limit,
    ErrorCode::Cancelled,
    ErrorCode::Corrupt,
    ErrorCode::Io,
    ErrorCode::Internal,
    ErrorCode::Unavailable,
];

/// The wire text of `code` (the enumerant's name in snake_case).
pub fn text(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::Permission => "permission",
        ErrorCode::Sql => "sql",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Invalid => "invalid",
        ErrorCode::Overloaded => "overloaded",
        ErrorCode::Limit => "limit",
        ErrorCode::Cancelled => "cancelled",
        ErrorCode::Corrupt => "corrupt",
        ErrorCode::Io => "io",
        ErrorCode::Internal => "internal",
        ErrorCode::Unavailable => "unavailable",
    }
}

/// The code whose wire text is `text`.
pub fn parse(text: &str) -> Option<ErrorCode> {
    ALL.into_iter().find(|&code| self::text(code) == text)
}

/// The code that starts an exception description, after any `remote exception: ` wrapper.
pub fn of_description(description: &str) -> Option<ErrorCode> {
    let description = description
        .strip_prefix("remote exception: ")
        .unwrap_or(description);
    parse(description.split_once(": ")?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_code_round_trips_through_its_text() {
        // The schema's enumerants, by ordinal: a new one without a text fails here.
        let mut ordinal = 0u16;
        while let Ok(code) = ErrorCode::try_from(ordinal) {
            assert_eq!(parse(text(code)), Some(code));
            assert!(ALL.contains(&code), "{code:?} missing from ALL");
            ordinal += 1;
        }
        assert_eq!(ordinal as usize, ALL.len());
        assert_eq!(
            of_description("remote exception: not_found: no table x"),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(of_description("no code here"), None);
        assert_eq!(of_description("nonsense: x"), None);
    }
}
