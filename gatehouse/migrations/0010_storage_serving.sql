-- Serving stored documents. Objects whose type a browser renders as a document (HTML, XML, SVG,
-- XSL, JavaScript, ...) are served as attachments (downloads) unless their bucket opts in here;
-- even then every object response carries a CSP sandbox, so no script in them runs.
-- Set it with the buckets API ("inline_documents": true) or in SQL:
--   UPDATE storage.buckets SET inline_documents = true WHERE id = 'reports';
ALTER TABLE storage.buckets ADD COLUMN inline_documents boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN storage.buckets.inline_documents IS
    'Serve HTML, XML, SVG and other document types inline (still sandboxed) instead of as attachments.';
