//! The config's one error type: every error names the file and, where it
//! applies, the line and column.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Syntax { file: String, message: String },
    #[error("config file {file}, line {line} column {column}: {message}")]
    Invalid { file: String, line: u64, column: u64, message: String },
}
