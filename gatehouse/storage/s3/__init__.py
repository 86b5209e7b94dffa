"""The S3 protocol at ``/storage/v1/s3`` (SigV4, S3's XML), over storage's services."""
