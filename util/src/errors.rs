//! Error text for people: the whole cause chain on one line.

/// `error: cause: cause` — the whole chain, since a bare top-level message ("request failed")
/// rarely tells an operator what went wrong. A cause whose text the chain already holds is not
/// repeated (many errors print their source inside their own message).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let error = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&error), "request failed: connection reset");
    }
}
