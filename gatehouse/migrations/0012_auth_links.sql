-- Email links and codes become two unrelated secrets of one token row.
--
-- Until now a link's token_hash was SHA-224(address + 6-digit code), GoTrue's format, so anyone
-- could turn a guessed code into a link and bypass the limits on typed codes. A link now carries
-- 128 random bits (token_hash keeps their SHA-256, as before); the code is kept apart, salted
-- and hashed in code_hash, and failed_attempts counts wrong codes typed for the token's address.
-- After too many, code_hash is cleared: the code is dead, the link still works.
ALTER TABLE auth.one_time_tokens
    ADD COLUMN code_hash text CHECK (char_length(code_hash) > 0),
    ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0);

-- Links mailed before this migration are derivable from their codes: they stop working. People
-- ask for a new email (resend, reset, magic link); pending email changes keep their state.
DELETE FROM auth.one_time_tokens;
