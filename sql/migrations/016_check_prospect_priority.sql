-- Check prospect priority (-1000..1000) in the database, as the API and the imports already do.
ALTER TABLE prospects ADD CONSTRAINT prospects_priority_range CHECK (priority BETWEEN -1000 AND 1000);
