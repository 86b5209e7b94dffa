-- Test schema for the data API: plain tables with a foreign key, a table under RLS, functions.
CREATE TABLE public.countries (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    code text,
    population bigint,
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.cities (
    id serial PRIMARY KEY,
    country_id int REFERENCES public.countries (id),
    name text NOT NULL,
    rank int CHECK (rank > 0)
);
CREATE TABLE public.notes (
    id serial PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users (id) ON DELETE CASCADE,
    body text,
    private boolean NOT NULL DEFAULT true
);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_read ON public.notes FOR SELECT USING (owner = auth.uid() OR NOT private);
CREATE POLICY notes_insert ON public.notes FOR INSERT TO authenticated WITH CHECK (owner = auth.uid());
CREATE POLICY notes_update ON public.notes FOR UPDATE TO authenticated USING (owner = auth.uid());
CREATE POLICY notes_delete ON public.notes FOR DELETE TO authenticated USING (owner = auth.uid());

GRANT SELECT ON public.countries, public.cities, public.notes TO anon, authenticated;
GRANT INSERT, UPDATE, DELETE ON public.countries, public.cities, public.notes TO authenticated;
GRANT ALL ON public.countries, public.cities, public.notes TO service_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO authenticated, service_role;

CREATE FUNCTION public.add(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION public.big_countries(min_pop bigint) RETURNS SETOF public.countries
    LANGUAGE sql STABLE AS 'SELECT * FROM public.countries WHERE population >= min_pop';
CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql STABLE AS 'SELECT auth.uid()::text';
CREATE FUNCTION public.bump(country int) RETURNS void LANGUAGE sql
    AS 'UPDATE public.countries SET population = population + 1 WHERE id = country';
CREATE FUNCTION public.numbers(n int) RETURNS SETOF int LANGUAGE sql IMMUTABLE AS 'SELECT generate_series(1, n)';
CREATE FUNCTION public.payment_required() RETURNS int LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'pay first' USING ERRCODE = 'PT402'; END $$;

INSERT INTO public.countries (name, code, population, tags, meta) VALUES
    ('France', 'FR', 68000000, '{europe,euro}', '{"capital": "Paris", "languages": ["fr"]}'),
    ('Germany', 'DE', 84000000, '{europe,euro}', '{"capital": "Berlin", "languages": ["de"]}'),
    ('Japan', 'JP', 125000000, '{asia}', '{"capital": "Tokyo", "languages": ["ja"]}'),
    ('Iceland', 'IS', 380000, '{europe}', '{"capital": "Reykjavík"}'),
    ('Nowhere, "Land"', NULL, NULL, '{}', '{}');
INSERT INTO public.cities (country_id, name, rank) VALUES
    (1, 'Paris', 1), (1, 'Lyon', 3), (1, 'Marseille', 2), (2, 'Berlin', 1), (3, 'Tokyo', 1), (NULL, 'Atlantis', NULL);
