"""Helpers for the make-mi tests and benchmark: a real MusicCaps excerpt and a CLI runner.

MUSICCAPS_EXCERPT is the header and the first 30 rows of `musiccaps-public.csv` (Google
MusicCaps, CC BY-SA 4.0, as shipped in github zihaod/MusiLingo
`data/music_data/musiccaps-public.csv`), copied verbatim.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MUSICCAPS_EXCERPT = r"""
ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval
-0Gj8-vB1q4,30,40,"/m/0140xf,/m/02cjck,/m/04rlf","['low quality', 'sustained strings melody', 'soft female vocal', 'mellow piano melody', 'sad', 'soulful', 'ballad']","The low quality recording features a ballad song that contains sustained strings, mellow piano melody and soft female vocal singing over it. It sounds sad and soulful, like something you would hear at Sunday services.",4,False,True
-0SdAVK79lg,30,40,"/m/0155w,/m/01lyv,/m/0342h,/m/042v_gx,/m/04rlf,/m/04szw,/m/07s0s5r,/m/0fx80y,/m/0gg8l","['guitar song', 'piano backing', 'simple percussion', 'relaxing melody', 'slow tempo', 'bass', 'country feel', 'instrumental', 'no voice']",This song features an electric guitar as the main instrument. The guitar plays a descending run in the beginning then plays an arpeggiated chord followed by a double stop hammer on to a higher note and a descending slide followed by a descending chord run. The percussion plays a simple beat using rim shots. The percussion plays in common time. The bass plays only one note on the first count of each bar. The piano plays backing chords. There are no voices in this song. The mood of this song is relaxing. This song can be played in a coffee shop.,0,False,False
-0vPFx-wRRI,30,40,"/m/025_jnm,/m/04rlf","['amateur recording', 'finger snipping', 'male mid range voice singing', 'reverb']","a male voice is singing a melody with changing tempos while snipping his fingers rhythmically. The recording sounds like it has been recorded in an empty room. This song may be playing, practicing snipping and singing along.",6,False,True
-0xzrMun0Rs,30,40,"/m/01g90h,/m/04rlf","['backing track', 'jazzy', 'digital drums', 'piano', 'e-bass', 'trumpet', 'acoustic guitar', 'digital keyboard song', 'medium tempo']",This song contains digital drums playing a simple groove along with two guitars. One strumming chords along with the snare the other one playing a melody on top. An e-bass is playing the footnote while a piano is playing a major and minor chord progression. A trumpet is playing a loud melody alongside the guitar. All the instruments sound flat and are being played by a keyboard. There are little bongo hits in the background panned to the left side of the speakers. Apart from the music you can hear eating sounds and a stomach rumbling. This song may be playing for an advertisement.,6,False,True
-1LrH01Ei1w,30,40,"/m/02p0sh1,/m/04rlf","['rubab instrument', 'repetitive melody on different octaves', 'no other instruments', 'plucked string instrument', 'no voice', 'instrumental', 'fast tempo']",This song features a rubber instrument being played. The strumming is fast. The melody is played on one fretted string and other open strings. The melody is played on the lower octave and is later repeated on the higher octave. This song can be played at a folk party.,0,False,False
-1OlgJWehn8,30,40,"/m/04rlf,/m/06bz3","['instrumental', 'white noise', 'female vocalisation', 'three unrelated tracks', 'electric guitar harmony', 'bass guitar', 'keyboard harmony', 'female lead vocalisation', 'keyboard harmony', 'slick drumming', 'boomy bass drops', 'male voice backup vocalisation']","This clip is three tracks playing consecutively. The first one is an electric guitar lead harmony with a groovy bass line, followed by white noise and then a female vocalisation to a vivacious melody with a keyboard harmony, slick drumming, funky bass lines and male backup. The three songs are unrelated and unsynced.",7,False,True
-1UWSisR2zo,30,40,"/m/04rlf,/m/0xzly","['live performance', 'poor audio quality', 'ambient noises', 'school dance program', 'crowd noise', 'high gain volume', 'hissing tones', 'medium tempo', 'techno dance song', 'male singer', 'groovy bass line', 'techno dance rhythm', 'keyboard accompaniment', 'kids dancing', 'noisy crowds', 'home video', 'school program', 'noise']","A male singer sings this groovy melody. The song is a techno dance song with a groovy bass line, strong drumming rhythm and a keyboard accompaniment. The song is so groovy and serves as a dance track for the dancing children. The audio quality is very poor with high gains and hissing noise.",1,False,True
-3Kv4fdm7Uk,30,40,"/m/04rlf,/m/04szw,/m/0l156b","['steeldrum', 'higher register', 'amateur recording']",someone is playing a high pitched melody on a steel drum. The file is of poor audio-quality.,6,False,True
-4NLarMj4xU,30,40,"/m/04rlf,/t/dd00034","['pop', 'tinny wide hi hats', 'mellow piano melody', 'high pitched female vocal melody', 'sustained pulsating synth lead', 'soft female vocal', 'punchy kick', 'sustained synth bass', 'claps', 'emotional', 'sad', 'passionate']","The Pop song features a soft female vocal singing over sustained pulsating synth lead, mellow piano melody, sustained synth brass, punchy kick, claps. tinny wide hi hats and high pitched female vocal melody. It sounds emotional, sad, passionate and like something you would hear on a radio.",4,False,False
-4SYC2YgzL8,30,40,"/m/04rlf,/m/04wptg,/m/0ggq0m","['solo live direct input acoustic guitar strumming', 'airy suspended open chords', 'low fidelity', 'ambient sounds', 'paper shuffling']","low fidelity audio from a live performance featuring a solo direct input acoustic guitar strumming airy, suspended open chords. Also present are occasional ambient sounds, perhaps papers being shuffled.",8,False,True
-5FoeegAgvU,230,240,"/m/04rlf,/m/07rrh0c","['brass', 'double bass', 'strings', 'instrumental', 'no voice', 'percussion']",The instrumental music features an ensemble that resembles the orchestra. The melody is being played by a brass section while strings provide harmonic accompaniment. At the end of the music excerpt one can hear a double bass playing a long note and then a percussive noise.,2,False,True
-5f6hjZf9Yw,30,40,"/m/02w4v,/m/04rlf","['folk music', 'rubab', 'male voice', 'slow tempo', 'emotional song', 'low quality audio', 'violin', 'accordion']",This folk song features a male voice singing the main melody in an emotional mood. This is accompanied by an accordion playing fills in the background. A violin plays a droning melody. There is no percussion in this song. This song can be played at a Central Asian classical concert.,0,False,False
-5xOcMJpTUk,70,80,"/m/018vs,/m/0342h,/m/042v_gx,/m/04rlf,/m/04szw,/m/09x0r,/m/0fx80y","['guitarist', 'male talking', 'twang sounds', 'mediocre audio quality', 'guitar string tones', 'guitar technique', 'fretboard sounds', 'guitar demo', 'online guitar lessons', 'home music video', 'youtube tutorial', 'bas]d audio quality', 'humming noise', 'energetic', 'passionate', 'spirited okay', 'strong voice', 'ambient room noises']","A male guitarist plays the guitar and speaks about technique in this online video tutorial. The male voice is strong and commanding, along with guitar string twang sounds, clearly demonstrating the technique. The audio quality is mediocre.",1,False,False
-6HBGg1cAI0,30,40,"/m/02p0sh1,/m/04rlf,/m/06j64v","['folk song', 'traditional song', 'middle eastern song', 'male voice', 'darbuka', 'oud instrument', 'moderate tempo', 'middle eastern instruments']",This middle eastern folk song features a male voice. This is accompanied by a string instrument called the oud playing the melody in between lines. A variety of middle-eastern percussion instruments are played in the background. A tambourine is played on every count. A darbuka plays a simple beat. This folk song can be played in a movie scene set in a Moroccan market.,0,False,True
-6QGvxvaTkI,280,290,"/m/01p970,/m/026t6,/m/0l14md","['low quality', 'echoing male vocal', 'acoustic strings melody', 'crowd chattering', 'wooden percussions', 'plucked strings melody', 'live performance', 'traditional', 'noisy', 'passionate']","The low quality recording features a live performance of a traditional song and it consists of an echoing male vocal singing over acoustic strings melody, plucked strings melody and wooden percussion. There is a crowd chattering noise in the background. The recording is a bit noisy and it sounds passionate.",4,False,False
-6pcgdLfb_A,110,120,"/m/04rlf,/t/dd00035","['r&b', 'soul', 'male vocal', 'melodic singing', 'strings sample', 'strong bass', 'electronic drums', 'sensual', 'groovy', 'urban']",This is an R&B/soul music piece. There is a male vocalist singing melodically and in a sensual manner over multiple tracks. The melody of the beat is provided by a string sample. There is a strong bass sound in the piece. The rhythm is provided by a groovy electronic drum beat. There is an urban feel to this piece. It could be used in the soundtrack of a TV series where two characters are sharing intimate moments.,9,False,False
-7B9tPuIP-w,450,460,"/m/0155w,/m/04rlf,/m/07sr1lc","['male vocalist', 'medium fast tempo', 'monologue', 'background music', 'hit songs', 'retro', 'narrator', 'narration', 'documentary', 'animated singing', 'enthusiastic drumming', 'cymbal ride', 'electric guitar', 'groovy bass lines', 'rock and rock', 'classic rock and rock', 'muffled', 'blues', 'rock hits', 'vocalisation']","A male voice narrates a monologue to the rhythm of a song in the background. The song is fast tempo with enthusiastic drumming, groovy bass lines,cymbal ride, keyboard accompaniment ,electric guitar and animated vocals. The song plays softly  in the background as the narrator speaks and burgeons when he stops. The song is a classic Rock and Roll and the narration is a Documentary.",7,False,True
-7wUQP6G5EQ,30,40,"/m/02cjck,/m/02w4v,/m/04rlf","['low quality', 'noisy', 'renaissance music', 'soft wooden percussions', 'mellow harmonized flute melody', 'mellow', 'soulful', 'passionate', 'emotional', 'vintage']","The low quality recording features a renaissance music that consists of soft wooden percussion and mellow, harmonized flute melody playing on top of it. The recording is a bit noisy, but it also sounds soulful, mellow, passionate, emotional and vintage - It really puts the listener in a period of renaissance.",4,False,False
-88me9bBzrk,30,40,"/m/015vgc,/m/04rlf","['hindi', 'tablas', 'shrutibox', 'bansuri flute', 'medium tempo']",Someone is playing a fast melody on a low bansuri flute along with someone playing tablas and a shrutibox in the background. This song may be playing at a live performance.,6,False,True
-8C-gydUbR8,30,40,"/m/04rlf,/t/dd00003,/t/dd00004,/t/dd00005","['gospel music', 'poor sound quality', 'children choir', 'medium tempo', 'black gospel music', 'distorted sound quality', 'meditative', 'devotional', 'inspiring', 'motivational', 'christian contemporary music', 'steady drumming rhythm', 'groovy bass line', 'keyboard harmony', 'retro christian songs']","A children’s choir sings this devotional melody. The song is medium tempo with a steady bass line, drumming rhythm and clapping percussion. The song is black gospel choral music played in front of a live congregation. The audio quality is very poor.",1,False,True
-8cgbhIR_pw,30,40,"/m/042v_gx,/m/04rlf,/m/04szw,/m/06w87,/m/07s0s5r,/m/0fx80y,/t/dd00034","['low quality', 'passionate muddy male vocal', 'arpeggiated acoustic guitar melody', 'noisy', 'muddy', 'cover', 'emotional', 'ballad', 'raw', 'messy']","The low quality recording features a cover of a ballad song that consists of passionate, muddy male vocal singing over arpeggiated acoustic guitar melody. It sounds noisy, muddy and messy, as the frequencies are clashing, but it is also emotional and raw.",4,False,True
-BHPu-dPmWQ,30,40,"/m/04rlf,/t/dd00032","['intimate wide mixed vocals', 'synth lead melody', 'punchy kick', 'noisy snare', 'claps', 'groovy bass guitar', 'tinny wide hi hats', 'short snare roll', 'alternative/indie', 'electric guitar melody', 'easygoing', 'melancholic']","The Alternative/Indie song features an intimate, widely spread, mixed vocals singing over noisy snare, punchy kick, wide tinny hi hats, electric guitar melody, synth lead melody and groovy bass guitar. At the end of the loop there is a short snare roll and some claps. It sounds easygoing and melancholic thanks to those vocals.",4,False,True
-BIMKnb3tlo,410,420,"/m/01p970,/m/026t6,/m/0l14md","['hindustani classical music', 'harmonium', 'bansuri', 'tabla', 'electronic drums', 'upbeat', 'joyful']","This is a Hindustani classical music piece. There is a harmonium playing the main tune. A bansuri joins in to play, supporting a melody every now and then. The rhythmic background consists of the tabla percussion and the electronic drums. The atmosphere of the piece is joyful.",9,False,False
-Bu7YaslRW0,30,40,"/m/025td0t,/m/02cjck,/m/04rlf","['atmospheric', 'cinematic', 'calming', 'flute/string/brass sound', 'cymbals', 'synth pad drone', 'slow tempo']",A synth pad is playing a drone sound in the lower mid range. Cymbals are creating atmosphere while a flute/string/brass sound is playing a melody. The whole recording is full of reverb. This song may be playing in a forest documentary.,6,False,True
-ByoSbgzr4M,0,10,"/m/01glhc,/m/04rlf","['instrumental', 'electric guitar', 'stringed instrument', 'vibrato', 'sonic power', 'amplified guitar', 'fast tempo', 'rapid', 'vigorous', 'dexterous', 'skilled', 'practice', 'intense', 'rock', 'hard rock', 'home recording']","This clip is an electronic guitar instrumental. The tempo is fast with a vigorous, lively electric guitar lead without any instrumentation. The music is rapid,controlled, intense and vigorous with immense control and dexterity with the instrument.",7,False,True
-CUp_Tmg2Y0,30,40,"/m/01qbl,/m/026t6,/m/02hnl,/m/03qtq,/m/03t3fj,/m/0bm02,/m/0l14md","['low quality', 'mono', 'noisy', 'drums solo', 'double pedal kick', 'punchy snare', 'shimmering cymbals', 'boomy toms', 'energetic', 'manic']","The low quality recording features a drum solo that consists of a double pedal kick, punchy snare, shimmering cymbals and boomy toms. It sounds energetic and manic, thanks to that kick pattern. The recording is mono and noisy.",4,False,False
-DeAdhYKbGE,290,300,"/m/0192l,/m/085jw","['bagpipe ensemble', 'unison melody', 'drone', 'quick melody', 'trills', 'ornamentation']","A bagpipe ensemble playing a quick melody in unison, employing trills to ornament it.",8,False,False
-Dtir74TiUM,40,50,"/m/01hgjl,/m/0283d,/m/04rlf,/m/07qb_dv","['drum & bass', 'electronic dance music', 'hollering sample', 'scratching', 'synth', 'electronic drums', 'upbeat', 'energetic', 'eerie']",This is a drum & bass music piece. There is a constantly repeating hollering sample accompanied by rapid turntable scratching. A synth sound can be heard playing an ominous tune. The rhythmic background consists of a fast-tempo electronic drum beat. The atmosphere is energetic. This piece could be used in the soundtrack of a car racing game. It could also be playing at nightclubs during early-2000s themed parties.,9,False,False
-EVRXQpt1-8,50,60,"/m/01swy6,/m/04rlf,/t/dd00126","['oriental/ballad', 'guitar like instrumental', 'bass', 'male voice singing', 'female backing voice singing', 'sad', 'slow tempo', 'harp']","Someone is playing a guitar-like instrument in a tremolo fashion along with someone playing a melody on a harp along with a bass playing the root note. A male voice is singing, sounding sad and sensitive. A backing voice that seems to be female is singing along, providing harmonies. This song may be playing in a dance performance.",6,False,True
-FEPOSP7ay0,260,270,/m/0395lw,"['loud bells impacts', 'metallic squeaking sound', 'low quality', 'mono', 'noisy']",The low quality recording features loud bells and metallic squeaking sounds. The recording is mono and noisy.,4,False,False
""".lstrip("\n")


def write_excerpt(directory: Path, rows: int | None = None) -> Path:
    """The excerpt (optionally only its first `rows` rows) as a CSV file in `directory`."""
    lines = MUSICCAPS_EXCERPT.splitlines(keepends=True)
    path = directory / "musiccaps.csv"
    path.write_text("".join(lines if rows is None else lines[: rows + 1]), encoding="utf-8")
    return path


def excerpt_captions() -> dict[str, str]:
    """ytid -> caption of the excerpt."""
    import csv
    import io

    return {r["ytid"]: r["caption"] for r in csv.DictReader(io.StringIO(MUSICCAPS_EXCERPT))}


def fast_args(base_url: str, out: Path, *extra: str) -> list[str]:
    """make-mi arguments for the local server: small backoff, short timeout, no rate limit."""
    return [
        "make-mi",
        "--base-url",
        base_url,
        "--out",
        str(out),
        "--model",
        "local-test",
        "--retry-base",
        "0.01",
        "--timeout",
        "1",
        "--requests-per-minute",
        "0",
        *extra,
    ]


def cli_env() -> dict[str, str]:
    # COLUMNS: rich wraps the one-line error at 80 columns when stderr is not a terminal.
    env = dict(os.environ, OPENAI_API_KEY="sk-test-secret-value", PYTHONUNBUFFERED="1", COLUMNS="400")
    env.pop("OPENAI_BASE_URL", None)
    return env


def start_cli(args: list[str], **kw) -> subprocess.Popen:
    """`python -m musilingo_cli ARGS` as a subprocess (what users run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "musilingo_cli", *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    proc = start_cli(args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
