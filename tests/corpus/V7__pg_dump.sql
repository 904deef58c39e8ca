--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE TABLE public.dumped (
    id integer NOT NULL,
    note text DEFAULT 'dumped; by pg_dump'::text
);

CREATE SEQUENCE public.dumped_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.dumped_id_seq OWNED BY public.dumped.id;
ALTER TABLE ONLY public.dumped ALTER COLUMN id SET DEFAULT nextval('public.dumped_id_seq'::regclass);
ALTER TABLE ONLY public.dumped
    ADD CONSTRAINT dumped_pkey PRIMARY KEY (id);

--
-- PostgreSQL database dump complete
--
