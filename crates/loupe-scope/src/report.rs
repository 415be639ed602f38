//! report (todo)
