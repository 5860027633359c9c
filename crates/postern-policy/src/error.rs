//! Validation errors that name the field they are about, as JSON pointers relative to the
//! document that was validated, so the REST layer can report them as RFC 9457 `errors`.

use std::fmt;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer to the offending field, e.g. `/items/3/match`.
    pub pointer: String,
    /// What is wrong with the field, for people.
    pub detail: String,
}

impl FieldError {
    /// An error at `pointer` (a JSON pointer) saying `detail`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }

    /// The same error, located under `prefix` (e.g. `/items/3`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.pointer = format!("{prefix}{}", self.pointer);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.detail)
    }
}

/// Every problem found in one document; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// A single error at `pointer` saying `detail`.
    pub fn one(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        ValidationErrors(vec![FieldError::new(pointer, detail)])
    }

    /// `Ok(())` when `errors` is empty.
    pub fn check(errors: Vec<FieldError>) -> Result<(), ValidationErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
